"""snn-es: spiking neural networks trained with evolution strategies."""
