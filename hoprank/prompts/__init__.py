"""Prompts as versioned data.

Every prompt the SDK renders is a YAML file under ``hoprank/prompts/templates`` named
``<name>@<version>.yaml`` with ``name``, ``version``, ``description``, declared
``variables``, chat ``messages`` whose contents are Jinja2 templates, and optionally an
``output_pattern`` (a regex the model output is expected to match) and free-form
``params``. See :mod:`hoprank.prompts.registry`.
"""

from hoprank.prompts.registry import PromptLike, PromptTemplate, list_prompts, load_prompt, prompt_param

__all__ = ["PromptLike", "PromptTemplate", "list_prompts", "load_prompt", "prompt_param"]
