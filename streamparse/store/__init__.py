"""The zarr store (schema v2): ``sink`` (write, local), ``remote`` (write, object storage), ``check``
(verify), ``lock`` (one writer), ``schema`` (layout constants), ``outputs`` (what a command may create,
replace or continue), ``objstore`` (fsspec URLs), ``ome`` (OME-Zarr label metadata), ``synthetic``
(stores of ground truth). The store keeps what it is given: it knows no model and no source."""
