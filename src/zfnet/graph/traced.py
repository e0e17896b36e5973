"""A model traced into a graph of ops: the one structure every zfnet algorithm runs on.

:func:`trace` runs ``torch.fx`` symbolic tracing on a model in eval mode. Every standard layer
(``nn.Conv2d``, ``nn.ReLU`` …) stays one node, every functional call or tensor method in ``forward``
(``F.relu``, ``torch.flatten``, ``x += identity``, ``torch.cat``, ``x.view``) becomes one, and each
node gets its :class:`~zfnet.graph.ops.Op`: forward, deconvnet rule, geometry and windowed rule. The
order of the nodes is the order ``forward`` runs them, whatever order the modules were registered in.

**Layer names.** The output of every module call is named by the module's path: a leaf
(``layer1.0.conv1``), a block (``layer3.1``, ``features.denseblock4``, ``inception4c``), or the
paper's ``conv1`` … ``fc8`` of zfnet's own models (``nn.Sequential`` children). A module that runs
several times (a ResNet block's one ``relu``) names each call with a suffix ``#1``, ``#2`` … in the
order they run, and its bare name is refused with those names listed. :attr:`Graph.layer_names`
lists every name in execution order (a container after what it contains when both end at one node).

Why ``torch.fx`` and not ``torch.export``: fx keeps ``nn.Module`` calls as nodes with their paths, so
layer names and module parameters come for free, traces in milliseconds without compiling, and runs
on any PyTorch this package supports; export lowers to ATen ops, which loses the module structure
the layer names and the rules are written against.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .ops import (
    POINTWISE,
    Geometry,
    Op,
    Opaque,
    Rectifier,
    Scale,
    is_known_leaf,
    label_of,
    resolve_function,
    resolve_module,
)

__all__ = ["Graph", "Node", "Layout", "TraceError", "trace", "eval_mode", "model_like"]

# Bit-for-bit the same operations run in model(x) and in the graph on CPU; the tolerance only absorbs
# kernels that are not deterministic (some GPU algorithms). A missing, extra or reordered op changes
# the output by far more.
_RTOL, _ATOL = 1e-4, 1e-5


class TraceError(TypeError):
    """A model that ``torch.fx`` cannot trace, or whose traced graph does not reproduce ``model(x)``."""


class eval_mode:
    """Context manager: every module of ``model`` in eval mode, each training flag restored on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, flag in self.flags:
            m.training = flag


def model_like(model: nn.Module) -> torch.Tensor | None:
    """A tensor of the model whose device and dtype its inputs should have: its first parameter, or its
    first floating-point buffer when it has no parameters; None for neither."""
    for t in model.parameters():
        return t
    for t in model.buffers():
        if t.is_floating_point():
            return t
    return None


@dataclass(frozen=True)
class _Ref:
    """A reference to another node's value inside a node's arguments."""

    index: int


def _map(obj: Any, fn: Callable[[_Ref], Any]) -> Any:
    if isinstance(obj, _Ref):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        out = [_map(o, fn) for o in obj]
        return type(obj)(out) if isinstance(obj, tuple) and not hasattr(obj, "_fields") else out
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    if isinstance(obj, slice):
        return slice(_map(obj.start, fn), _map(obj.stop, fn), _map(obj.step, fn))
    return obj


def _refs(obj: Any) -> list[int]:
    found: list[int] = []
    _map(obj, lambda r: found.append(r.index))
    return found


@dataclass(eq=False)
class Node:
    """One operation of a :class:`Graph`.

    Attributes:
        index: position in execution order (0 is the input image).
        name: the fx node's name.
        kind: ``"input"``, ``"const"`` (a parameter or buffer used directly), ``"value"`` (a size,
            shape or other non-tensor helper) or ``"op"`` (a tensor operation with an :class:`Op`).
        op: the node's :class:`~zfnet.graph.ops.Op` (None except for ``"op"``).
        inputs: the nodes whose signal flows in, in argument order (set by the first layout).
        where: where the node comes from: a module path, or the model's code line.
    """

    index: int
    name: str
    kind: str
    target: Any
    args: tuple
    kwargs: dict
    where: str
    module_path: str = ""
    call: str = ""  # the fx node's op: placeholder, get_attr, call_module, call_function, call_method
    op: Op | None = None
    inputs: tuple[int, ...] = ()
    consumers: list[int] = field(default_factory=list)

    def describe(self) -> str:
        label = self.op.label if self.op is not None else label_of(self.target)
        return f"graph node {self.name!r} ({label}) at {self.where}"


@dataclass(frozen=True)
class Layout:
    """Per-node shapes for one input shape (batch left out), with each map's spatial axes and geometry.

    Attributes:
        shapes: per node, the output's shape; a list of shapes for a tuple (``chunk``); None for a
            non-tensor helper.
        axes: per node, the (row, column) axes of a feature map (``(2, 3)`` for NCHW, ``(1, 2)`` for
            ConvNeXt's channels-last tensors, batch included), None where rows and columns are gone.
        geometry: per op node, the window each output position reads (:data:`~zfnet.graph.ops.POINTWISE`
            or a kernel), None where it reads everything.
        local: per node, whether it can run on a rectangle of its input.
    """

    shapes: list[Any]
    axes: list[tuple[int, int] | None]
    geometry: list[Geometry | None]
    local: list[bool]


class _Tracer(fx.Tracer):
    def __init__(self, leaves: frozenset[str]) -> None:
        super().__init__()
        self.record_stack_traces = True
        self.leaves = leaves
        self.calls: list[tuple[str, fx.Node]] = []

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or is_known_leaf(m)

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        out = super().call_module(m, forward, args, kwargs)
        if isinstance(out, fx.Proxy):
            self.calls.append((self.path_of_module(m), out.node))
        return out


def _where(node: fx.Node) -> str:
    """The model's code line behind an fx node, from its recorded stack trace."""
    stack = node.stack_trace or node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in stack.strip().splitlines() if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("File ") and "/torch/" not in lines[i].split(",")[0]:
            code = lines[i + 1] if i + 1 < len(lines) else ""
            return f"{lines[i]}: {code}" if code else lines[i]
    module = node.meta.get("nn_module_stack")
    if module:
        return f"module {list(module)[-1]!r}"
    return "the model's forward"


def trace(model: nn.Module, *, leaves: Iterable[str] = ()) -> Graph:
    """Trace ``model`` into a :class:`Graph`.

    Args:
        model: any ``nn.Module`` that takes one image batch and returns one tensor.
        leaves: paths of submodules to keep as single nodes without tracing their ``forward``
            (for code ``torch.fx`` cannot trace, such as data-dependent control flow). Such a node
            runs, but it has no deconvnet rule or geometry: top-k and features work through it; the
            deconvnet, receptive fields and occlusion refuse to pass through it.

    Raises:
        TypeError: ``model`` is not a module.
        TraceError: ``torch.fx`` cannot trace ``forward`` (the message says why and how to mark a leaf).

    Example:
        >>> from zfnet.models import build
        >>> trace(build("zfnet-tiny")).layer_names[:3]
        ['conv1.0', 'conv1.1', 'conv1']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    leaves = frozenset(leaves)
    known = dict(model.named_modules())
    bad = sorted(leaf for leaf in leaves if leaf not in known or not leaf)
    if bad:
        raise ValueError(f"leaves {bad} are not submodules of the model")
    tracer = _Tracer(leaves)
    with eval_mode(model):
        try:
            fx_graph = tracer.trace(model)
        except Exception as err:  # fx raises TraceError, TypeError, AttributeError …, all meaning "cannot trace"
            frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
            at = f" (at {frame.filename}:{frame.lineno}: {frame.line})" if frame is not None else ""
            raise TraceError(
                f"torch.fx cannot trace {type(model).__name__}: {type(err).__name__}: {err}{at}. zfnet traces "
                "forward() symbolically, so it cannot follow control flow that depends on tensor values. Mark "
                "the submodule whose forward does this as a leaf (e.g. Deconvnet(model, leaves=['block.path'])); "
                "it then runs as one node, which top-k and features can use but the deconvnet cannot pass "
                "through") from err
    return Graph(model, fx_graph, tracer.calls)


class Graph:
    """A traced model: its nodes in execution order, named layers, and how to run them.

    Use :func:`trace` to make one. The graph holds references to the model's own parameters, so it
    follows later changes of the weights (not of the architecture).
    """

    def __init__(self, model: nn.Module, fx_graph: fx.Graph, calls: list[tuple[str, fx.Node]]) -> None:
        self.model = model
        self.nodes: list[Node] = []
        index: dict[fx.Node, int] = {}
        output: Any = None
        for fx_node in fx_graph.nodes:
            if fx_node.op == "output":
                output = fx_node.args[0]
                continue
            args = _map_fx(fx_node.args, index)
            kwargs = _map_fx(fx_node.kwargs, index)
            if fx_node.op == "placeholder":
                if any(n.kind == "input" for n in self.nodes):
                    if fx_node.args:  # an optional argument: its default
                        kind, target = "value", _constant(fx_node.args[0])
                    else:
                        raise TraceError(f"{type(model).__name__}.forward takes more than one input "
                                         f"({fx_node.name!r}); zfnet runs models on one image batch")
                else:
                    kind, target = "input", None
                node = Node(len(self.nodes), fx_node.name, kind, target, (), {}, "the model's input",
                            call="placeholder")
            elif fx_node.op == "get_attr":
                node = Node(len(self.nodes), fx_node.name, "const", fx_node.target, (), {},
                            f"attribute {fx_node.target!r}")
            else:
                where = fx_node.target if fx_node.op == "call_module" else _where(fx_node)
                node = Node(len(self.nodes), fx_node.name, fx_node.op, fx_node.target, args, kwargs, where,
                            module_path=fx_node.target if fx_node.op == "call_module" else "", call=fx_node.op)
            index[fx_node] = node.index
            self.nodes.append(node)
        if not isinstance(output, fx.Node) or output not in index:
            raise TraceError(f"{type(model).__name__}.forward must return one tensor, "
                             f"got {type(output).__name__}")
        self.output = index[output]
        for node in self.nodes:
            for r in set(_refs((node.args, node.kwargs))):
                self.nodes[r].consumers.append(node.index)
        self.layers = self._name_layers(calls, index)
        self._layouts: dict[tuple[int, ...], Layout] = {}
        self._carries: list[bool] | None = None

    # -- names -------------------------------------------------------------------------------------

    def _name_layers(self, calls: list[tuple[str, fx.Node]], index: dict[fx.Node, int]) -> dict[str, int]:
        per_path: dict[str, list[int]] = {}
        for path, fx_node in calls:
            if path and fx_node in index:
                per_path.setdefault(path, []).append(index[fx_node])
        order = {name: i for i, (name, _) in enumerate(self.model.named_modules())}
        named: list[tuple[int, int, str]] = []
        self.repeated: dict[str, list[str]] = {}
        for path, nodes in per_path.items():
            if len(nodes) == 1:
                named.append((nodes[0], order.get(path, 0), path))
            else:
                names = [f"{path}#{k + 1}" for k in range(len(nodes))]
                self.repeated[path] = names
                named += [(n, order.get(path, 0), name) for n, name in zip(nodes, names)]
        # execution order; a container (earlier in named_modules) after what it contains at one node
        named.sort(key=lambda t: (t[0], -t[1]))
        return {name: node for node, _, name in named}

    @property
    def layer_names(self) -> list[str]:
        """Every layer name, in execution order (see the module docstring)."""
        return list(self.layers)

    def index_of(self, layer: str) -> int:
        """The node whose output is ``layer``'s output.

        Raises:
            TypeError: ``layer`` is not a str.
            ValueError: an unknown name (the message lists the valid ones), or the bare name of a
                module that runs several times (the message lists its calls' names).
        """
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a str (a layer name), got {type(layer).__name__}")
        if layer in self.layers:
            return self.layers[layer]
        if layer in self.repeated:
            raise ValueError(f"{layer!r} runs {len(self.repeated[layer])} times; name one call: "
                             f"{', '.join(self.repeated[layer])}")
        raise ValueError(f"unknown layer {layer!r}; valid names: {', '.join(self.layers)}")

    def name_of(self, index: int) -> str:
        """A layer name of node ``index``, or the fx node's name."""
        for name, i in self.layers.items():
            if i == index:
                return name
        return self.nodes[index].name

    # -- running -----------------------------------------------------------------------------------

    def call(self, i: int, lookup: Callable[[int], Any], *, window: bool = False,
             record: bool = False) -> tuple[Any, Any]:
        """Run node ``i`` on the values ``lookup`` gives its arguments: (value, ctx).

        ``window``: the op's windowed form (no padding, see :meth:`~zfnet.graph.ops.Op.run_window`);
        ``record``: also return what its deconvnet rule needs (max-pooling's switches).
        """
        node = self.nodes[i]
        if node.kind == "const":
            return _fetch_attr(self.model, node.target), None
        if node.call == "placeholder":
            return node.target, None
        args = _map(node.args, lambda r: lookup(r.index))
        kwargs = _map(node.kwargs, lambda r: lookup(r.index))
        if node.op is None:  # a helper on sizes and shapes: evaluated as written
            return _call_plain(node, self.model, args, kwargs), None
        if window:
            return node.op.run_window(args, kwargs, record)
        if record:
            return node.op.run_recording(args, kwargs)
        return node.op.run(args, kwargs), None

    def run(self, x: torch.Tensor, *, upto: int | None = None, keep: Iterable[int] = (),
            visit: Callable[[int, Any, Any], None] | None = None, record: Iterable[int] = ()) -> dict[int, Any]:
        """Run the graph on ``x`` up to node ``upto`` (default: the output): the values of ``keep``.

        Values no later node needs are freed as soon as they are used. ``visit(i, value, ctx)`` is called
        with each node's value as soon as it is computed (to read a layer while it is in the cache,
        without keeping it); ``ctx`` is None except for the nodes in ``record``, which run in their
        recording form (:meth:`call`: max-pooling's switches, at no extra cost on a CPU).
        """
        record = set(record)
        self._ensure_ops(x)
        last = self.output if upto is None else upto
        keep = set(keep) | {last}
        values: dict[int, Any] = {0: x}
        needed = self._ancestors_of(keep)
        remaining = {i: sum(1 for c in self.nodes[i].consumers if c in needed) for i in needed}
        out: dict[int, Any] = {}
        for i in sorted(needed):
            if i:
                values[i], ctx = self.call(i, values.__getitem__, record=i in record)
                if visit is not None:
                    visit(i, values[i], ctx)
            if i in keep:
                out[i] = values[i]
            for r in set(_refs((self.nodes[i].args, self.nodes[i].kwargs))):
                remaining[r] -= 1
                if remaining[r] == 0 and r not in keep:
                    values.pop(r, None)
        return out

    def arguments(self, i: int, lookup: Callable[[int], Any]) -> tuple[Any, dict[str, Any]]:
        """Node ``i``'s positional and keyword arguments, each node reference replaced by ``lookup(index)``."""
        node = self.nodes[i]
        return _map(node.args, lambda r: lookup(r.index)), _map(node.kwargs, lambda r: lookup(r.index))

    def references(self, i: int) -> list[int]:
        """The nodes whose values node ``i`` takes as arguments (signal-carrying or not)."""
        return sorted(set(_refs((self.nodes[i].args, self.nodes[i].kwargs))))

    def carries(self, i: int) -> bool:
        """Whether node ``i``'s value is computed from the input image (one value per image)."""
        return bool(self._carries and self._carries[i])

    def ancestors(self, target: int) -> set[int]:
        """Every node ``target``'s value depends on (itself included)."""
        return self._ancestors_of([target])

    def _ancestors_of(self, targets: Iterable[int]) -> set[int]:
        seen: set[int] = set()
        stack = list(targets)
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(_refs((self.nodes[i].args, self.nodes[i].kwargs)))
        return seen

    def signal_ancestors(self, target: int) -> list[int]:
        """The nodes a signal at ``target`` flows back through (the input included), in execution order."""
        seen: set[int] = set()
        stack = [target]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(self.nodes[i].inputs)
        return sorted(seen)

    def require_rules(self, target: int, purpose: str) -> list[int]:
        """:meth:`signal_ancestors` of ``target``, after checking each has a rule.

        Raises:
            TypeError: a node without a rule, named with its op and the model's code line.
        """
        nodes = self.signal_ancestors(target)
        for i in nodes:
            node = self.nodes[i]
            if node.kind == "op" and (node.op is None or not node.op.has_rule()):
                raise TypeError(f"{purpose} has no rule for {node.describe()}; supported ops are listed in "
                                "docs/deconvnet.md (a leaf module runs but cannot be passed through)")
        return nodes

    # -- layout ------------------------------------------------------------------------------------

    def _ensure_ops(self, x: torch.Tensor) -> None:
        if self._carries is None:
            self.layout(tuple(x.shape[1:]))

    def layout(self, input_shape: Sequence[int]) -> Layout:
        """Shapes, axes and geometry of every node for inputs of shape ``(C, H, W)`` (cached).

        The first call also resolves every node's op. Each new input shape is checked once: the
        graph, run on a seeded random image, must reproduce ``model(x)``.

        Raises:
            TraceError: the traced graph does not reproduce ``model(x)``.
            ValueError: ``forward`` fails on that input shape.
        """
        key = tuple(int(s) for s in input_shape)
        if key in self._layouts:
            return self._layouts[key]
        like = model_like(self.model)
        probe = torch.randn((1, *key), generator=torch.Generator().manual_seed(0))
        if like is not None:
            probe = probe.to(device=like.device, dtype=like.dtype if like.is_floating_point() else probe.dtype)
        values: list[Any] = [None] * len(self.nodes)
        values[0] = probe
        with eval_mode(self.model), torch.no_grad():
            try:
                expected = self.model(probe)
            except Exception as err:
                raise ValueError(f"{type(self.model).__name__} fails on a {tuple(probe.shape)} input: "
                                 f"{type(err).__name__}: {err}") from err
            first = self._carries is None
            if first:
                self._carries = [False] * len(self.nodes)
                self._carries[0] = True
            for node in self.nodes[1:]:
                if first:
                    self._resolve(node, values)
                try:
                    values[node.index], ctx = self.call(node.index, values.__getitem__)
                except TypeError:
                    raise
                except Exception as err:
                    raise TraceError(f"running {node.describe()} on a {tuple(probe.shape)} input fails: "
                                     f"{type(err).__name__}: {err}") from err
                if first and node.op is not None:
                    in_shapes = [_shape(values[r]) for r in node.inputs]
                    node.op.bind(_map(node.args, lambda r: values[r.index]),
                                 _map(node.kwargs, lambda r: values[r.index]), in_shapes, _shape(values[node.index]))
        result = values[self.output]
        if not isinstance(expected, torch.Tensor) or not isinstance(result, torch.Tensor) \
                or expected.shape != result.shape:
            got = tuple(expected.shape) if isinstance(expected, torch.Tensor) else type(expected).__name__
            raise TraceError(f"the traced graph of {type(self.model).__name__} returns {_shape(result)}, "
                             f"the model {got}")
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        if not torch.allclose(result.float(), expected.float(), rtol=_RTOL, atol=_ATOL * max(1.0, scale)):
            diff = float((result.float() - expected.float()).abs().max())
            raise TraceError(f"the traced graph of {type(self.model).__name__} does not reproduce model(x) "
                             f"(outputs differ by up to {diff:.3g}); its forward may depend on state that "
                             "tracing fixed (a flag, a Python-side counter)")
        shapes = [_shape(v) for v in values]
        axes, geometry, local = self._spatial(shapes, values)
        self._layouts[key] = Layout(shapes, axes, geometry, local)
        return self._layouts[key]

    def _resolve(self, node: Node, values: list[Any]) -> None:
        """Give ``node`` its op and its signal inputs (first layout only)."""
        carries = self._carries
        assert carries is not None
        refs = _refs((node.args, node.kwargs))
        if node.kind == "call_module":
            module = self.model.get_submodule(node.target)
            node.op = resolve_module(module, node.target)
            node.kind = "op"
        elif node.kind in ("call_function", "call_method"):
            if not any(carries[r] for r in refs) or _is_metadata(node):
                node.kind = "value"  # sizes, shapes, arithmetic on parameters: evaluated as written
                return
            node.op = resolve_function(
                node.target, _map(node.args, lambda r: r), _map(node.kwargs, lambda r: r),
                is_signal=lambda a: isinstance(a, _Ref) and carries[a.index],
                is_gate=lambda a: isinstance(a, _Ref) and isinstance(self.nodes[a.index].op, Rectifier)
                and self.nodes[a.index].op.gate)
            node.kind = "op"
        else:
            return
        signal = [r for r in _refs(node.args) + _refs(node.kwargs) if carries[r]]
        op = node.op
        if isinstance(op, Scale):
            a, b = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
            if op.signal_arg == -1:  # two feature maps: the broadcast (smaller) one is the gate
                na, nb = values[a.index].numel(), values[b.index].numel()
                if na == nb:
                    node.op = Opaque(op.fn, op.label + " of two feature maps (neither is a gate)")
                else:
                    op.signal_arg = 0 if na > nb else 1
            if isinstance(node.op, Scale):
                chosen = (a, b)[node.op.signal_arg]
                signal = [chosen.index] if isinstance(chosen, _Ref) else []
        elif op.kind == "getitem" and not isinstance(values[node.args[0].index], (tuple, list)):
            node.op = Opaque(op.fn, op.label + " (indexing a tensor)")
        node.inputs = tuple(signal)
        carries[node.index] = bool(signal) or (isinstance(node.op, Opaque) and any(carries[r] for r in refs))
        if isinstance(node.op, Opaque) and not node.inputs:
            node.inputs = tuple(r for r in refs if carries[r])

    def _spatial(self, shapes: list[Any], values: list[Any]) -> tuple[list, list, list]:
        """Per node: spatial axes, geometry, and whether it can run on a window."""
        n = len(self.nodes)
        axes: list[tuple[int, int] | None] = [None] * n
        geometry: list[Geometry | None] = [None] * n
        local = [False] * n
        if isinstance(shapes[0], tuple) and len(shapes[0]) == 3:
            axes[0] = (2, 3)
            local[0] = True
        for node in self.nodes[1:]:
            i, op = node.index, node.op
            if op is None or not node.inputs or not isinstance(shapes[i], (tuple, list)):
                continue
            src = node.inputs[0]
            in_axes, in_shape, out_shape = axes[src], shapes[src], shapes[i]
            in_shapes = [shapes[r] for r in node.inputs]
            out_axes = _out_axes(node, op, in_axes, in_shape, out_shape, values)
            axes[i] = out_axes
            if isinstance(op, Opaque) or in_axes is None or out_axes is None:
                continue
            if op.kind in ("reshape", "linear"):
                op.pointwise = out_axes is not None and (op.kind == "reshape" or in_axes is not None)
                op.local = op.pointwise
            g = op.geometry(in_shapes, out_shape)
            if op.kind in ("conv", "maxpool", "avgpool", "adaptive_avgpool") and in_axes != (2, 3):
                g = None
            geometry[i] = g
            local[i] = g is not None and op.local and all(axes[r] is not None for r in node.inputs) and (
                g is not POINTWISE or op.kind not in ("cat", "split") or _dim_ok(node, op, in_axes, values))
        return axes, geometry, local


def _dim_ok(node: Node, op: Op, in_axes: tuple[int, int], values: list[Any]) -> bool:
    """A concatenation or split along channels, not rows or columns."""
    if op.kind == "cat":
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    else:
        dim = op.dim  # type: ignore[attr-defined]
    first = node.inputs[0]
    ndim = values[first].dim() if isinstance(values[first], torch.Tensor) else 4
    dim = dim if dim >= 0 else ndim + dim
    return dim not in (0, *in_axes)


def _out_axes(node: Node, op: Op, in_axes: tuple[int, int] | None, in_shape: Any, out_shape: Any,
              values: list[Any]) -> tuple[int, int] | None:
    """The spatial axes of an op's output, given its first signal input's."""
    if isinstance(in_shape, list) and in_shape:  # one part of a chunk / split
        in_shape = in_shape[0]
    if in_axes is None or not isinstance(in_shape, tuple):
        return None
    if isinstance(out_shape, list):  # a tuple of parts (chunk / split): every part keeps the axes
        return in_axes
    nd_in, nd_out = len(in_shape) + 1, len(out_shape) + 1
    if op.kind == "reshape":
        name = op.name  # type: ignore[attr-defined]
        args = _map(node.args, lambda r: values[r.index])
        if name == "permute":
            dims = list(args[1:]) if len(args) > 1 and isinstance(args[1], int) else list(
                args[1] if len(args) > 1 else node.kwargs["dims"])
            dims = [d % nd_in for d in dims]
            return (dims.index(in_axes[0]), dims.index(in_axes[1]))
        if name == "transpose":
            a, b = (int(args[1]) % nd_in, int(args[2]) % nd_in) if len(args) > 2 else (0, 1)
            swap = {a: b, b: a}
            return (swap.get(in_axes[0], in_axes[0]), swap.get(in_axes[1], in_axes[1]))
        # view, reshape, flatten, squeeze: rows and columns survive as the two last dimensions
        if in_axes == (nd_in - 2, nd_in - 1) and len(out_shape) >= 3 and \
                tuple(out_shape[-2:]) == tuple(in_shape[-2:]):
            return (nd_out - 2, nd_out - 1)
        return None
    if op.kind == "linear":
        return in_axes if nd_in - 1 not in in_axes and nd_out == nd_in else None
    if op.kind == "norm" and not getattr(op, "group", False):
        shape = op._params(_map(node.args, lambda r: values[r.index]), {})[0] if op.module is None \
            else tuple(op.module.normalized_shape)
        return in_axes if all(d < nd_in - len(shape) for d in in_axes) else None
    if op.kind == "mean":
        return None
    return in_axes if nd_out == nd_in else None


_METADATA_METHODS = {"size", "dim", "numel", "nelement", "ndimension", "stride", "is_contiguous", "get_device",
                     "element_size", "is_floating_point"}
_METADATA_ATTRIBUTES = {"shape", "dtype", "device", "ndim", "is_cuda"}


def _is_metadata(node: Node) -> bool:
    """A call that reads a tensor's size, shape or type, not its values (``x.size()``, ``x.shape``)."""
    if node.kind == "call_method":
        return node.target in _METADATA_METHODS
    return node.target is getattr and len(node.args) > 1 and node.args[1] in _METADATA_ATTRIBUTES


def _shape(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape[1:])
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return [tuple(v.shape[1:]) for v in value]
    return None


def _map_fx(obj: Any, index: dict[fx.Node, int]) -> Any:
    return fx.node.map_arg(obj, lambda n: _Ref(index[n])) if obj is not None else obj


def _constant(value: Any) -> Any:
    return value


def _fetch_attr(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _call_plain(node: Node, model: nn.Module, args: Any, kwargs: Any) -> Any:
    if node.call == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.call == "call_module":
        return model.get_submodule(node.target)(*args, **kwargs)
    return node.target(*args, **kwargs)

