"""The assistant graph's nodes, one module per node."""
