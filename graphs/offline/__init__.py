"""Development stand-ins for the language model: the OpenAI-compatible server (`llm_server`)
that the tests' scripted model and the offline model answer through, and the offline model
itself (`model`), which reads the demo's common cases by rule and says plainly it is no model.

Nothing in the product imports these at module level; `graphs.models` starts the offline model
only when no real model is configured.
"""
