"""The ipam worker: Romana layer-3 tenancy addressing and classic subnet pools."""
