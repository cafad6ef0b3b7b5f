"""The network side of the remote engines: the one retry layer (:mod:`.retry`) and the
client-side pool of OpenAI-compatible endpoints (:mod:`._endpoints`)."""
