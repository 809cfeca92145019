"""The torch side: conversion (onnx2torch and the ParamMap), data and preprocessing, masked fine-tuning."""
