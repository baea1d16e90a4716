# W4A4: 4-bit weights, 4-bit activations for every quantized layer
# (read by PTQHook when its quant_cfg leaves the bits unset).
quant_bits = dict(w_bits=4, a_bits=4)
