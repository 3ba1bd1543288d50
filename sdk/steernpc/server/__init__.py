"""The gRPC runtime: servicer, auth, health, reflection, metrics and `steernpc serve`."""
