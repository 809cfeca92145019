"""`python -m onnxprune`: the same command line as `onnxprune`."""

from onnxprune.cli import main

if __name__ == "__main__":
    main()
