"""The command lines, apart from the lessons they run.

Each `python -m course_utils.X` (train, chat, serve, export, ddp, quantize) runs the `main` of
`course_utils.cli.X`: the lesson module `course_utils.X` hands over to it when run as a program,
so a reader of a lesson finds the lesson, and the commands may use the artifact cache
(`course_utils.artifacts`), which the lessons never import. Every command takes `--help` and
`--profile`; a bad setting gets a one-line error, never a traceback.
"""

PROFILE_HELP = "model size and budget (default: $COURSE_PROFILE, else gpu with CUDA, else cpu)"
