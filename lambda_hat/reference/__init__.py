"""The HMC reference as a record: its quality verdict, pooling of extended chains, and the one
reader and writer of ``ref.json``.
"""
