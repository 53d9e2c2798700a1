"""Resilience tests restart shared services (the machine's PostgreSQL or MariaDB): every
other test using them would see the outage, so they are marked ``disruptive`` (pytest.ini)
and need a window of their own (the suite runs one test at a time; on a shared machine,
deselect them with ``-m "not disruptive"``)."""
