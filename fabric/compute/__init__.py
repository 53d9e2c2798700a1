"""The compute worker: turns scheduled instances into running guests through a virt driver."""
