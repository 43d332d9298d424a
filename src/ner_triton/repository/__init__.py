"""The Triton model repository: typed config builders (``model_configs``), the committed files (``render``),
a build's outputs (``install``) and new versions while serving (``rollout``, ``ner-repository``)."""
