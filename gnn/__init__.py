"""gnn: the TxPert perturbation encoders (GAT, GATv2, Exphormer and multigraph variants) on DGL or PyG."""
