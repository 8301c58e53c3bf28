"""The standing controller's machinery, as a library the service adapter drives.

    controller  Controller (owns state, journal, scheduler; slots for links, keeper)
                and ServiceConfig
    journal     the one ordered event log: sequence numbers, resume, wake-ups, retention
    schedule    named periodic jobs with their phase in SQLite (the sweep first)
    counters    what the metrics report, read from the links, journal and pushes when asked

Nothing here prints, reads argv or listens on a socket: ``shoal.service`` does.
"""
