"""course_utils: the shared package of *Build a GPT, Notebook by Notebook*.

One module per idea, sorted by audience (CONTRIBUTING.md, "The package"):

- lessons, in the order the chapters teach them: config, data, vocab, batches, attention,
  model, evaluation, train, checkpoints, ddp, amp, sampling, quantize, finetune, chat,
  batching, serve, export, widgets, plots;
- machinery they lean on: decoding (the fast KV-cached step), timing, files, serve_tools,
  artifacts (the cache of trained models);
- entry points: cli (each `python -m course_utils.X`), and exercises (the chapters' checkers).

Notebooks build small versions inline and check them against these canonical ones.
"""

__version__ = "0.1.0"
