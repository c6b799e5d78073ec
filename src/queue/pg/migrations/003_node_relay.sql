-- The node-to-node relay (src/nodes/): a streaming client on one node whose job runs on another is relayed the
-- running node's records as they come, over HTTP between the nodes, not through the database.

-- Where the other nodes reach this node's relay (FOREMAN_NODE_URL), written with each heartbeat.
ALTER TABLE nodes ADD COLUMN url text;

-- The secret a node presents to another's relay: made once by the first node to start (random, 32 bytes), read by
-- every node at its start. Whoever can read the queue can read it, and could read every job anyway.
CREATE TABLE node_secret (
  id     integer PRIMARY KEY CHECK (id = 1),
  secret text NOT NULL
);
