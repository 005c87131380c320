"""How a :class:`~nplstm.SequenceModel` is written in the one ``.npz`` schema: its config and parameter shapes.

Version 3 configs are nested (the stack's config, the embedding, the dense layers); version 2
configs were flat (one linear output layer) and are read through :func:`_current_config`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .head import Dense, Embedding, _check_activation
from .params import positive_int
from .stack import _stack_from_config, stack_parameter_shapes


def _current_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config of this schema, from it or from the earlier flat one (input_size, hidden_size, output_size ...)."""
    if "lstm" in config:
        return config
    unknown = set(config) - {"input_size", "hidden_size", "output_size", "num_layers", "bidirectional", "dropout",
                             "proj_size", "many_to_many"}
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    many_to_many = config.get("many_to_many", False)
    if not isinstance(many_to_many, bool):
        raise TypeError(f"many_to_many must be true or false; got {many_to_many!r}")
    return {
        "lstm": {
            "input_size": config["input_size"], "hidden_size": config["hidden_size"],
            "num_layers": config.get("num_layers", 1), "bidirectional": config.get("bidirectional", False),
            "proj_size": config.get("proj_size", 0), "dropout": config.get("dropout", 0.0), "bias": True,
            "batch_first": True,
        },
        "dense": [[config["output_size"], "linear"]],
        "output": "sequence" if many_to_many else "h_n",
    }


def _model_parameter_shapes(config: dict[str, Any], max_count: int | None = None) -> dict[str, tuple[int, ...]]:
    config = _current_config(config)
    unknown = set(config) - {"lstm", "embedding", "dense", "output", "mask_value", "go_backwards", "masked_outputs"}
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    stack = config["lstm"]
    if not isinstance(stack, dict):
        raise TypeError(f"lstm must be a stack config; got {stack!r}")
    shapes = {f"lstm.{k}": v for k, v in stack_parameter_shapes(stack, max_count).items()}
    emb = config.get("embedding")
    if emb is not None:
        if not isinstance(emb, dict) or set(emb) != {"num_embeddings", "padding_idx", "mask_zero"}:
            raise ValueError(f"embedding must hold num_embeddings, padding_idx and mask_zero; got {emb!r}")
        shapes["embedding.W"] = (positive_int(emb["num_embeddings"], "num_embeddings"), stack["input_size"])
    dense = config["dense"]
    if not isinstance(dense, list) or not dense or len(dense) > 64:
        raise ValueError(f"dense must list 1 to 64 [units, activation] pairs; got {dense!r}")
    width = (2 if stack.get("bidirectional") else 1) * (stack.get("proj_size") or stack["hidden_size"])
    names = [f"dense.{k}" for k in range(len(dense) - 1)] + ["head"]
    for k, (name, spec) in enumerate(zip(names, dense)):
        if not isinstance(spec, list) or len(spec) != 2:
            raise ValueError(f"dense[{k}] must be [units, activation]; got {spec!r}")
        units = positive_int(spec[0], f"dense[{k}] units")
        _check_activation(spec[1], f"dense[{k}] activation")
        shapes[f"{name}.W"], shapes[f"{name}.b"] = (units, width), (units,)
        width = units
    total = sum(int(np.prod(s)) for s in shapes.values())
    if max_count is not None and total > max_count:
        raise ValueError(f"the config implies {total} parameters, over the limit of {max_count} (pass max_bytes= to allow more)")
    return shapes


def _model_from_config(cls: Any, config: dict[str, Any], dtype: Any) -> Any:
    config = _current_config(config)
    lstm = _stack_from_config(config["lstm"], dtype)
    emb_cfg = config.get("embedding")
    embedding = None if emb_cfg is None else Embedding(
        emb_cfg["num_embeddings"], lstm.input_size, padding_idx=emb_cfg["padding_idx"], mask_zero=emb_cfg["mask_zero"],
        seed=0, dtype=dtype,
    )
    dense, width = [], lstm.output_size
    for units, act in config["dense"]:
        dense.append(Dense(width, units, act, seed=0, dtype=dtype))
        width = units
    return cls.from_parts(
        lstm, dense, embedding=embedding, output=config.get("output", "h_n"), mask_value=config.get("mask_value"),
        go_backwards=config.get("go_backwards", False), masked_outputs=config.get("masked_outputs", "zero"),
    )

