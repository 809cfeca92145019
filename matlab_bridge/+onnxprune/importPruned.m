function net = importPruned(file, varargin)
%IMPORTPRUNED Import a pruned ONNX file into MATLAB (Deep Learning Toolbox).
%   net = onnxprune.importPruned('pruned.onnx')
%   Uses importNetworkFromONNX (R2023b and later), else importONNXNetwork. Extra arguments go
%   to the importer. Unstructured (zeros in dense tensors) and compacted (smaller tensors) files
%   import like any float model. Forms MATLAB's importers do not read are refused in one line
%   before MATLAB is tried: int8 files (QuantizeLinear/DequantizeLinear, from onnxprune.quantize)
%   and sparse initializers (prune 'SparseStorage'); import the float model instead.
    form = onnxprune.inspect(file);
    if form.quantized
        error('onnxprune:cannotImport', ['%s is int8 (QuantizeLinear/DequantizeLinear): MATLAB''s ONNX ', ...
              'importers do not read it; import the float model and run the int8 file in onnxruntime'], file);
    end
    if form.sparse_initializers > 0
        error('onnxprune:cannotImport', ['%s stores %d weights as sparse initializers, which MATLAB''s ', ...
              'importers do not read; prune again without SparseStorage'], file, form.sparse_initializers);
    end
    if exist('OCTAVE_VERSION', 'builtin')
        error('onnxprune:noMATLAB', 'importing ONNX networks needs MATLAB''s Deep Learning Toolbox');
    end
    if exist('importNetworkFromONNX', 'file')
        net = importNetworkFromONNX(file, varargin{:});
    elseif exist('importONNXNetwork', 'file')
        net = importONNXNetwork(file, 'OutputLayerType', 'classification', varargin{:});
    else
        error('onnxprune:noMATLAB', 'Deep Learning Toolbox Converter for ONNX Model Format is not installed');
    end
end
