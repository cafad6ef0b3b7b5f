"""The in-process torch runtime under :class:`~hoprank.llm.engines.transformers_engine.TransformersEngine`.

- :mod:`.worker`: the torch worker (one thread, cancellable, bounded, counted jobs);
- :mod:`._device`: device, dtype and SDPA-kernel choice;
- :mod:`._buckets`: shape bucketing of logit forwards;
- :mod:`.forward`: last-token outputs of rows of any lengths from one forward;
- :mod:`._fp32_head`: the LM head recomputed in fp32;
- :mod:`.attention` and :mod:`.attention_capture`: attention rows (ICR).

torch and transformers are imported inside functions only.
"""
