"""What users do, callable from the CLI and (later) the REST API alike.

Services resolve names across the fleet, check the transition table, call the
``hypervisor`` wrappers, wait for results by events, report progress through a
callback and record every operation in the journal. They never print.
"""
