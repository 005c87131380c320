"""A tiny SIMD layer for numba: 256-bit vectors of float32 (8 lanes) or float64 (4 lanes).

numba leaves LLVM's SLP vectoriser off, so a register tile written with
scalar accumulators compiles to scalar FMAs.  These intrinsics build the
vector code explicitly (LLVM ``<8 x float>`` / ``<4 x double>``): a load, a
broadcast load, an FMA, an add, a store, on raw typed pointers (a
``CPointer`` carries no reference count, so passing one to an inlined helper
costs nothing; an array would cost lock-prefixed refcount calls per tile).
Every operation is generic over the pointer's dtype, so one tile source
serves both precisions.  Imported only by :mod:`nplstm._packed`, i.e. only
when numba is (this module imports numba and llvmlite at import time).
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

#: Vector width in bytes (AVX2; AVX-512 machines run it too, at up to half their peak).
VECTOR_BYTES = 32


class VecType(types.Type):
    """A 256-bit vector of ``dtype`` (float32 or float64)."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype
        self.lanes = VECTOR_BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"Vec{self.lanes}x{dtype}")


@register_model(VecType)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: VecType) -> None:
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes))


def _gep(context: Any, builder: Any, ptr: Any, idx: Any, idxty: Any) -> Any:
    return builder.gep(ptr, [context.cast(builder, idx, idxty, types.intp)])


@intrinsic
def data(typingctx: Any, arr: Any) -> Any:
    """Typed pointer to an array's first element (the array must stay alive: the caller holds it)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return context.make_array(sig.args[0])(context, builder, args[0]).data

    return types.CPointer(arr.dtype)(arr), codegen


@intrinsic
def at(typingctx: Any, p: Any, i: Any) -> Any:
    """``p + i`` (elements)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return _gep(context, builder, args[0], args[1], sig.args[1])

    return p(p, i), codegen


@intrinsic
def lanes(typingctx: Any, p: Any) -> Any:
    """Lanes of a vector of ``p``'s dtype, as a compile-time constant."""
    n = VecType(p.dtype).lanes

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(ir.IntType(64), n)

    return types.int64(p), codegen


@intrinsic
def vzero(typingctx: Any, p: Any) -> Any:
    """A vector of zeros of ``p``'s dtype."""
    vt = VecType(p.dtype)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return ir.Constant(context.get_value_type(vt), None)

    return vt(p), codegen


@intrinsic
def vload(typingctx: Any, p: Any, i: Any) -> Any:
    """The vector at ``p + i`` (unaligned)."""
    vt = VecType(p.dtype)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        vty = context.get_value_type(vt)
        ptr = _gep(context, builder, args[0], args[1], sig.args[1])
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=p.dtype.bitwidth // 8)

    return vt(p, i), codegen


@intrinsic
def vbroadcast(typingctx: Any, p: Any, i: Any) -> Any:
    """``p[i]`` in every lane."""
    vt = VecType(p.dtype)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        vty = context.get_value_type(vt)
        x = builder.load(_gep(context, builder, args[0], args[1], sig.args[1]))
        v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), mask)

    return vt(p, i), codegen


@intrinsic
def vstore(typingctx: Any, p: Any, i: Any, v: Any) -> Any:
    """Store vector ``v`` at ``p + i``."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        vty = context.get_value_type(sig.args[2])
        ptr = _gep(context, builder, args[0], args[1], sig.args[1])
        builder.store(args[2], builder.bitcast(ptr, vty.as_pointer()), align=p.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(p, i, v), codegen


@intrinsic
def vfma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """``a * b + c`` fused (one rounding), lane by lane."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        vty = context.get_value_type(sig.args[0])
        suffix = f"v{sig.args[0].lanes}f{sig.args[0].dtype.bitwidth}"
        fn = builder.module.globals.get(f"llvm.fma.{suffix}")
        if fn is None:
            fn = ir.Function(builder.module, ir.FunctionType(vty, [vty, vty, vty]), name=f"llvm.fma.{suffix}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


@intrinsic
def vadd(typingctx: Any, a: Any, b: Any) -> Any:
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def as_float(typingctx: Any, bits: Any, like: Any) -> Any:
    """Integer ``bits`` (truncated to the float's width) reinterpreted as a float of ``like``'s type (vectorises to nothing)."""
    if not isinstance(bits, types.Integer) or like not in (types.float32, types.float64):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        width, have = like.bitwidth, bits.bitwidth  # type: ignore[attr-defined]
        value = args[0]
        if have > width:
            value = builder.trunc(value, ir.IntType(width))
        elif have < width:
            value = builder.sext(value, ir.IntType(width))
        return builder.bitcast(value, context.get_value_type(like))

    return like(bits, like), codegen
