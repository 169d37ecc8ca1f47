"""The evaluation set: messages with their expected route and tool calls, and its runner.

`conversa eval` (see `evals.run`) runs every example through the real assistant graph and prints
route, tool-call and reply-language accuracy; `--langsmith` runs the same set as a LangSmith
experiment.
"""
