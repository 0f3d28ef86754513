-- The name of the credential that wrote each record; NULL for records
-- written without one (an open service, or before this column existed).
ALTER TABLE events ADD COLUMN written_by text;
