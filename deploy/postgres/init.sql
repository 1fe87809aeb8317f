-- One PostgreSQL for the compose stack: Temporal's own databases are created by its schema
-- tool; these are the saga store's and the demo participants' (one database each).
CREATE USER sagas WITH PASSWORD 'sagas';
CREATE DATABASE sagas OWNER sagas;
CREATE DATABASE flights OWNER sagas;
CREATE DATABASE hotels OWNER sagas;
CREATE DATABASE hotel_broker OWNER sagas;
CREATE DATABASE cars OWNER sagas;
CREATE DATABASE payments OWNER sagas;
CREATE DATABASE inventory OWNER sagas;
CREATE DATABASE shipping OWNER sagas;
CREATE DATABASE notifications OWNER sagas;
