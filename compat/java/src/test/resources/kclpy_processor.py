"""A MultiLangDaemon record processor on amazon_kclpy (v3 interface).

Appends "<shard> <data>" for every record to $KCLPY_OUT and checkpoints after each batch,
so the Java test can see what was processed and find the checkpoints in the lease table.
"""
import os
import sys

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor


class RecordProcessor(processor.RecordProcessorBase):
    def __init__(self):
        self.shard = None

    def initialize(self, initialize_input):
        self.shard = initialize_input.shard_id

    def process_records(self, process_records_input):
        records = process_records_input.records
        if not records:
            return
        with open(os.environ["KCLPY_OUT"], "a") as out:
            for record in records:
                out.write("%s %s\n" % (self.shard, record.binary_data.decode("utf-8")))
        process_records_input.checkpointer.checkpoint()

    def lease_lost(self, lease_lost_input):
        sys.stderr.write("lease lost %s\n" % self.shard)

    def shard_ended(self, shard_ended_input):
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input):
        shutdown_requested_input.checkpointer.checkpoint()


if __name__ == "__main__":
    kcl.KCLProcess(RecordProcessor()).run()
