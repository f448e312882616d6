"""Read the mmdetection config stored in an authors' checkpoint (``meta["config"]``, Python source) as
data, without executing it: literals, names and a few safe expressions are evaluated; anything else
is refused. ``read_meta_config`` extracts what the converter needs (variant, classes, thresholds)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

HEAD_CHANNELS, FPN_CHANNELS, GRID = 128, 256, 40  # the authors' head: 128-ch towers, 256-ch FPN, S = 40
class _Unsupported(Exception):
    pass


def _value(node: ast.AST, env: dict[str, Any]) -> Any:
    """A literal-only evaluator for mmcv config source: constants, tuples, lists, dicts, ``dict(...)``,
    names bound earlier, unary minus, + and * on numbers or strings, constant subscripts."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        vals = [_value(e, env) for e in node.elts]
        return tuple(vals) if isinstance(node, ast.Tuple) else vals
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _Unsupported
        return {_value(k, env): _value(v, env) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        if any(kw.arg is None for kw in node.keywords):
            raise _Unsupported
        return {kw.arg: _value(kw.value, env) for kw in node.keywords}
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise _Unsupported
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _value(node.operand, env)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        a, b = _value(node.left, env), _value(node.right, env)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            return a + b if isinstance(node.op, ast.Add) else a * b
        if isinstance(a, str) and isinstance(b, str) and isinstance(node.op, ast.Add):
            return a + b
    if isinstance(node, ast.Subscript):
        base, key = _value(node.value, env), _value(node.slice, env)
        if isinstance(base, (dict, list, tuple)):
            try:
                return base[key]
            except (KeyError, IndexError, TypeError):
                pass
    raise _Unsupported


def read_config_source(text: str) -> dict[str, Any]:
    """Top-level assignments of an mmcv config's Python source that are plain literals (others are
    skipped); nothing is executed."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    env: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                env[stmt.targets[0].id] = _value(stmt.value, env)
            except (_Unsupported, RecursionError):
                continue
    return env


@dataclass
class MetaConfig:
    """What the checkpoint's ``meta["config"]`` says about the model (None = not stated)."""

    head_type: str | None = None
    depth: int | None = None
    light: bool | None = None
    num_classes: int | None = None
    test_cfg: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # settings the official variants do not implement


def read_meta_config(text: str) -> MetaConfig | None:
    env = read_config_source(text)
    model = env.get("model")
    if not isinstance(model, dict):
        return None
    mc = MetaConfig()
    backbone, neck, head = (model.get(k) if isinstance(model.get(k), dict) else {} for k in ("backbone", "neck", "mask_head"))
    mc.head_type = head.get("type")
    mc.depth = backbone.get("depth")
    if "num_classes" in head:
        mc.num_classes = int(head["num_classes"])
    light_convert, last_res = head.get("enable_light_convert"), head.get("enable_last_res")
    if light_convert is not None or last_res is not None:
        mc.light = bool(light_convert) and bool(last_res)
        if bool(light_convert) != bool(last_res):
            mc.problems.append(f"enable_light_convert={light_convert} with enable_last_res={last_res}")
    expect = [(backbone, "dcn", lambda v: isinstance(v, dict) and v.get("type") == "DCNv2", "backbone.dcn"),
              (backbone, "stage_with_dcn", lambda v: tuple(v) == (False, True, True, True), "backbone.stage_with_dcn"),
              (neck, "num_outs", lambda v: v == 5, "neck.num_outs"),
              (neck, "out_channels", lambda v: v == FPN_CHANNELS, "neck.out_channels"),
              (neck, "add_extra_convs", lambda v: not v, "neck.add_extra_convs"),
              (head, "stacked_convs", lambda v: v == 4, "mask_head.stacked_convs"),
              (head, "seg_feat_channels", lambda v: v == HEAD_CHANNELS, "mask_head.seg_feat_channels"),
              (head, "num_grid", lambda v: v == GRID, "mask_head.num_grid"),
              (head, "enable_fusion", lambda v: not v, "mask_head.enable_fusion"),
              (head, "enable_kernel", lambda v: not v, "mask_head.enable_kernel")]
    for section, key, ok, name in expect:
        if key in section:
            try:
                good = ok(section[key])
            except TypeError:
                good = False
            if not good:
                mc.problems.append(f"{name}={section[key]!r}")
    tc = model.get("test_cfg") if isinstance(model.get("test_cfg"), dict) else env.get("test_cfg")
    if isinstance(tc, dict):
        mc.test_cfg = {k: tc[k] for k in ("ctr_score", "mask_thr", "cate_score_thr") if isinstance(tc.get(k), (int, float))}
    return mc


