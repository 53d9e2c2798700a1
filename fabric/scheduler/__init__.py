"""The scheduler: filters and weighs compute hosts, then claims one atomically in the database."""
