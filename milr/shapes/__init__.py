"""The "shapes" world: a synthetic scene renderer, ShapesEval prompts and a tiny trained Janus."""
