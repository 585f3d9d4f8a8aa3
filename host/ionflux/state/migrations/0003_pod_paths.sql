-- Version 3: IONPOD's path table (store/_paths.py: a human path bound to a CID,
-- ``pod.bind`` and the guests' write_pod_data), shared, so a path a guest bound
-- on one host resolves on every host (the blocks themselves are in Kubo).

CREATE TABLE paths (
    path TEXT PRIMARY KEY,
    cid TEXT NOT NULL
);
