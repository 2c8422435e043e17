"""course_utils: the shared package of *Build a GPT, Notebook by Notebook*.

One module per idea, in the order the book teaches them: config, data, vocab,
datasets, attention, model, train, ... Notebooks build small versions inline and
check them against these canonical ones.
"""

__version__ = "0.1.0"
