"""The networks: the zoo's models and the stacker (models.py), their custom layers, and
their FLOPs (flops.py).

Importing this package registers every custom layer with Keras (under registry.PACKAGE),
so a saved `.keras` model loads with a plain `keras.models.load_model(path)`. There are no
Lambda layers anywhere: every custom layer is a real serialisable class with a get_config.
"""
from fat2019.nn import frontend, heads, pooling, recurrent  # noqa: F401  (they register the layers)
