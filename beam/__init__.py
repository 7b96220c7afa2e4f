"""The Apache Beam job that turns annotated videos into TFRecord shards.

Run it with ``python -m beam.build_tfrecords``. Modules, one job each:

* :mod:`beam.build_tfrecords`: the command line (flags, config, ``main``);
* :mod:`beam.transforms`: the pipeline (one video -> one SequenceExample or a dead letter);
* :mod:`beam.publish`: staging folder, atomic publish, counts and ``dataset_info.json``;
* :mod:`beam.runner`: Beam's local runner without the Prism hand-off (the only module that
  touches Beam internals).

This package is named ``beam``; inside it Apache Beam is always imported as ``apache_beam``.
"""

from maivar_tf.console import quiet_known_warnings

quiet_known_warnings()  # before any module here imports apache_beam
