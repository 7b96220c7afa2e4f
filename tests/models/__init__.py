"""Tests for maivar_tf.models."""
