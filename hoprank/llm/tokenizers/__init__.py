"""The ``Tokenizer`` protocol over real tokenizers: a Hugging Face tokenizer
(:mod:`.hf_tokenizer`) and tiktoken working offline (:mod:`.tiktoken_offline`)."""
