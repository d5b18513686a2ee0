"""One module per paper, one paper per chapter: ``geosam``, ``pointsam``, ``pslg_sam``, ``planetary``,
``hybrid``. A method module composes the flat core (prompts, decoders, metrics, ...) and the experts; it
never imports another method module. Import the submodule you need; nothing is imported here.
"""
