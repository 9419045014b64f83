"""The run directory and its safety: the parquet store and commit protocol (`store`), table columns
(`schema`), the writer lock (`lock`) and the restricted unpickler for files from elsewhere (`safe_pickle`)."""
