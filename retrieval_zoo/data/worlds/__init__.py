"""Purpose-built worlds: small datasets in the canonical schema where exactly one paper mechanism has a signal.

Each module builds one world with a function ``build(seed=0, **knobs) -> ProductSearchDataset``: the rule that
makes its mechanism useful is written in the module docstring, and a knob turns the signal off, so a test can
show that a model learns the mechanism where its signal exists and that its control (the ablation without the
mechanism) cannot. The learnability tests (``tests/models/test_*_learnability.py``, ``pytest -m learnability``)
train the shipped configs on them; issue 20 explains why.
"""
