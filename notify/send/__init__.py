"""The send engine, in the order a send runs: ``options`` (what was asked), ``plan`` (the job and
the first-notice rows), ``store`` (all its SQL: planning, claiming, leasing, recording) and
``runner`` (the pipeline that claims, renders, hands over and records).
"""
