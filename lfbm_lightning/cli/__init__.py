"""Command line: the console scripts, their help pages, the sweep plan and the
error-to-exit-code handler."""
