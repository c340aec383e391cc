"""`dogbreed local`: the train and serve images run on this machine as SageMaker runs them.

    opt_ml.py         the /opt/ml tree of one training host, hyperparameters as strings
    archive.py        model.tar.gz packed as SageMaker packs /opt/ml/model; safe unpacking
    docker_engine.py  the Docker engine (Docker SDK for Python): network choice, containers
                      labelled with their run, live logs, stop-and-remove by id
    train.py          `local train`: one container per host, one DDP job
    serve.py          `local serve`: the endpoint container on a model

Nothing here imports torch, numpy, Pillow or ONNX Runtime, and `docker` is imported
only when a command runs, so `dogbreed --help` stays light.
"""
