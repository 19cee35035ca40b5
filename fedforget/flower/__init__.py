"""The Flower edge: the only package that imports ``flwr``.

``client_app``: the ClientApp (train, evaluate, ``train.unlearn``, ``query.whoami``).
``strategy``: the seeded FedAvg strategy built on ``flwr.serverapp.strategy``.
``federation``: message exchange for many arms over one Grid, and the handle
unlearning methods get. ``server_app``: the ServerApp whose main drives the arms.
``inline``: a Grid that runs the same ClientApp in-process (the ``inline`` engine).
"""
