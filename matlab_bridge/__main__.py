"""The .mat file transport, for MATLAB without the py. interface and for GNU Octave.

    python -m matlab_bridge FUNCTION in.mat out.mat

in.mat holds the arguments as variables: `Model` (or `Models` for bench and plot) and the name-value
arguments (`Sparsity`, `Data`, `Images`, `Labels`, ...). out.mat receives the result fields
(column vectors of doubles, cell arrays of char, char, doubles, logicals) and `ok`; on an error,
`ok` is false and `error_identifier` / `error_message` say what, and the exit code is 1.
"""

from __future__ import annotations

import sys

import numpy as np


def _from_mat(value):
    """MATLAB values as the bridge functions take them: char -> str, cellstr -> list of str."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return [_from_mat(item) for item in value.reshape(-1, order="F")]
        if value.dtype.kind == "U":
            return str(value.reshape(-1)[0]) if value.size == 1 else [str(v) for v in value.reshape(-1)]
        if value.size == 1 and value.ndim <= 2:
            scalar = value.reshape(-1)[0]
            return bool(scalar) if value.dtype == bool else float(scalar)
        return value
    return value


def _to_mat(result: dict) -> dict:
    content = {}
    for key, value in result.items():
        if isinstance(value, list):
            cell = np.empty((len(value), 1), dtype=object)
            for index, item in enumerate(value):
                cell[index, 0] = item
            content[key] = cell
        elif isinstance(value, np.ndarray):
            content[key] = value.reshape(-1, 1)
        else:
            content[key] = value
    return content


def main(argv: list[str] | None = None) -> int:
    """Run FUNCTION with the arguments in in.mat; write out.mat. Returns the exit code."""
    import scipy.io

    from matlab_bridge import FUNCTIONS, BridgeError

    argv = sys.argv[1:] if argv is None else argv
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines reach MATLAB's window as they come
    if len(argv) != 3:
        print("usage: python -m matlab_bridge FUNCTION in.mat out.mat", file=sys.stderr)
        return 2
    name, source, target = argv
    try:
        if name not in FUNCTIONS:
            raise BridgeError("onnxprune:badFunction", f"unknown function '{name}'; choose {', '.join(FUNCTIONS)}")
        try:
            variables = scipy.io.loadmat(source, squeeze_me=True, chars_as_strings=True)
        except (OSError, ValueError) as exc:
            raise BridgeError("onnxprune:badInput", f"cannot read {source}: {exc}") from None
        arguments = {k: _from_mat(v) for k, v in variables.items() if not k.startswith("__")}
        first = "Models" if name in ("bench", "plot") else "Model"
        if first not in arguments:
            raise BridgeError("onnxprune:badInput", f"{source} has no variable '{first}'")
        result = FUNCTIONS[name](arguments.pop(first), **arguments)
        scipy.io.savemat(target, {**_to_mat(result), "ok": True}, oned_as="column")
        return 0
    except BridgeError as error:
        scipy.io.savemat(target, {"ok": False, "error_identifier": error.identifier, "error_message": error.text})
        print(str(error), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
