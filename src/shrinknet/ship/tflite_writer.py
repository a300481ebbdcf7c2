"""The flatbuffer side of the ``.tflite`` writer (ship/tflite.py): tensors, buffers and operators of
one subgraph, serialized with the TFLite schema bindings (the ``tflite`` package) and ``flatbuffers``."""

from __future__ import annotations


def _mod(name: str):
    """The schema module ``tflite.<name>`` (its builder functions; ``from tflite import X`` gives the class)."""
    import importlib

    return importlib.import_module(f"tflite.{name}")


class _Writer:
    """Tensors, buffers and operators of one subgraph, serialized by :meth:`finish`."""

    def __init__(self):
        import flatbuffers  # noqa: F401
        import tflite  # noqa: F401

        self.tensors, self.buffers, self.ops, self.codes = [], [b""], [], []

    def tensor(self, name: str, shape, ttype: int, data: bytes | None = None, q=None) -> int:
        buf = 0
        if data is not None:
            self.buffers.append(data)
            buf = len(self.buffers) - 1
        self.tensors.append((name, [int(s) for s in shape], ttype, buf, q))
        return len(self.tensors) - 1

    def op(self, code: int, inputs, outputs, opt_type: int = 0, options=None) -> None:
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append((self.codes.index(code), list(inputs), list(outputs), opt_type, options))

    def finish(self, inputs, outputs, description: str) -> bytes:
        import flatbuffers

        Buffer, Model, Operator, OperatorCode, QuantizationParameters, SubGraph, Tensor = (
            _mod(n) for n in ("Buffer", "Model", "Operator", "OperatorCode", "QuantizationParameters", "SubGraph",
                              "Tensor"))

        b = flatbuffers.Builder(1024)

        def ivec(start, values, kind="int32"):
            start(b, len(values))
            for v in reversed(values):
                {"int32": b.PrependInt32, "int64": b.PrependInt64, "float": b.PrependFloat32}[kind](v)
            return b.EndVector()

        bufs = []
        for data in self.buffers:
            vec = None
            if data:
                b.StartVector(1, len(data), 16)  # 16-byte aligned data
                b.head = b.head - len(data)
                b.Bytes[b.head: b.head + len(data)] = data
                vec = b.EndVector()
            Buffer.Start(b)
            if vec is not None:
                Buffer.AddData(b, vec)
            bufs.append(Buffer.End(b))
        tens = []
        for name, shape, ttype, buf, q in self.tensors:
            qoff = None
            if q is not None:
                scales, zps, dim = q
                sv = ivec(QuantizationParameters.StartScaleVector, [float(s) for s in scales], "float")
                zv = ivec(QuantizationParameters.StartZeroPointVector, [int(z) for z in zps], "int64")
                QuantizationParameters.Start(b)
                QuantizationParameters.AddScale(b, sv)
                QuantizationParameters.AddZeroPoint(b, zv)
                QuantizationParameters.AddQuantizedDimension(b, dim)
                qoff = QuantizationParameters.End(b)
            nm = b.CreateString(name)
            sh = ivec(Tensor.StartShapeVector, shape)
            Tensor.Start(b)
            Tensor.AddShape(b, sh)
            Tensor.AddType(b, ttype)
            Tensor.AddBuffer(b, buf)
            Tensor.AddName(b, nm)
            if qoff is not None:
                Tensor.AddQuantization(b, qoff)
            tens.append(Tensor.End(b))
        ops = []
        for idx, ins, outs, opt_type, options in self.ops:
            opt = options(b) if options else None
            iv, ov = ivec(Operator.StartInputsVector, ins), ivec(Operator.StartOutputsVector, outs)
            Operator.Start(b)
            Operator.AddOpcodeIndex(b, idx)
            Operator.AddInputs(b, iv)
            Operator.AddOutputs(b, ov)
            if opt is not None:
                Operator.AddBuiltinOptionsType(b, opt_type)
                Operator.AddBuiltinOptions(b, opt)
            ops.append(Operator.End(b))

        def tvec(start, items):
            start(b, len(items))
            for it in reversed(items):
                b.PrependUOffsetTRelative(it)
            return b.EndVector()

        tv, ov = tvec(SubGraph.StartTensorsVector, tens), tvec(SubGraph.StartOperatorsVector, ops)
        iv, outv = ivec(SubGraph.StartInputsVector, inputs), ivec(SubGraph.StartOutputsVector, outputs)
        name = b.CreateString("main")
        SubGraph.Start(b)
        SubGraph.AddTensors(b, tv)
        SubGraph.AddInputs(b, iv)
        SubGraph.AddOutputs(b, outv)
        SubGraph.AddOperators(b, ov)
        SubGraph.AddName(b, name)
        sg = SubGraph.End(b)
        codes = []
        for code in self.codes:
            OperatorCode.Start(b)
            OperatorCode.AddDeprecatedBuiltinCode(b, min(code, 127))
            OperatorCode.AddBuiltinCode(b, code)
            OperatorCode.AddVersion(b, 1)
            codes.append(OperatorCode.End(b))
        cv, sv, bv = (tvec(Model.StartOperatorCodesVector, codes), tvec(Model.StartSubgraphsVector, [sg]),
                      tvec(Model.StartBuffersVector, bufs))
        desc = b.CreateString(description)
        Model.Start(b)
        Model.AddVersion(b, 3)
        Model.AddOperatorCodes(b, cv)
        Model.AddSubgraphs(b, sv)
        Model.AddDescription(b, desc)
        Model.AddBuffers(b, bv)
        b.Finish(Model.End(b), file_identifier=b"TFL3")
        return bytes(b.Output())
