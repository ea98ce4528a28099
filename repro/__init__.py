"""Reproduction harness for Dual-Space Knowledge Distillation (DSKD, EMNLP 2024)."""
