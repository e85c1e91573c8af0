"""What each VM suite checks, one function per step, in the order the suite runs them (`STEPS` in each module).

Each step takes the suite's small context (the loaded plan, the session with its lab and report, the SSH helpers)
and records named checks and phase timings in the session's report.
"""
