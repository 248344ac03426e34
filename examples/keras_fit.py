"""Keras 3 with expman.KerasCallback (the torch backend runs on the CPU here).

    python examples/keras_fit.py && expman serve

fit's params and the optimizer config go to config.yaml; each epoch's logs land at the number
of batches trained so far (loss -> train/loss, val_loss -> val/loss), plus a running row
every 10 batches.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")   # before the first import of keras

import keras
import numpy as np

import expman

rng = np.random.default_rng(0)
x = rng.normal(size=(2048, 8)).astype("float32")
y = (x[:, :4].sum(1) > 0).astype("float32")

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy",
              metrics=["accuracy"])
model.fit(x, y, epochs=4, batch_size=64, validation_split=0.2, verbose=0,
          callbacks=[expman.KerasCallback("keras_binary", run_name="mlp",
                                          log_every_n_batches=10, close_at_end=True)])
