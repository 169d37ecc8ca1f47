"""The assistant graph: state, run context, prompts and assembly. No eager imports here."""
