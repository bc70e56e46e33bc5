"""SynLearner: learn to synthesize across a stream of tasks, from feedback.

- ``feedback``: per-sample rewards (label agreement, quality), set diversity, dev utility.
- ``store``: the experience store (SQLite): pattern rewards, task descriptors, lessons, exemplars.
- ``bandit``: Thompson sampling over synthesis patterns, with priors from similar tasks.
- ``patterns``: the synthesis patterns a task explores (template, demonstrations, temperature).
- ``learner``: ``SynLearner.fit``/``partial_fit``: an improved copy of a program, never the input.
- ``weights``: LoRA updates of a local synthesizer (SFT on high-reward samples, then GRPO).
- ``stream``: the loop over a stream of tasks.
"""
