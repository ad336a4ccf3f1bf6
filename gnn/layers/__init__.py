"""Layers written once on the backend primitives: attention convolutions and blocks; the linear layer every model uses."""

from gnn.layers.attention_convs import ExphormerAttention, GATConv, GATv2Conv
from gnn.layers.blocks import ConvBlock, EdgeFeatures, ExphormerBlock, LayerAttention, make_conv
from gnn.layers.linear import Linear

__all__ = ["GATConv", "GATv2Conv", "ExphormerAttention", "ConvBlock", "EdgeFeatures", "ExphormerBlock", "LayerAttention", "make_conv", "Linear"]
