"""transfer progress, per-migration bandwidth cap and resumable transfer token

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 11:40:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('migrations', schema=None) as batch_op:
        # Disks pass 2 GiB: a 32-bit INTEGER overflows on PostgreSQL.
        batch_op.alter_column('bytes_total', existing_type=sa.Integer(),
                              type_=sa.BigInteger(), existing_nullable=False)
        batch_op.alter_column('bytes_done', existing_type=sa.Integer(),
                              type_=sa.BigInteger(), existing_nullable=False)
        batch_op.add_column(sa.Column('transfer_rate', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('transfer_eta', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('transfer_files', sa.JSON(), nullable=False,
                                      server_default='{}'))
        batch_op.add_column(sa.Column('progress_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('max_bandwidth', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('transfer_token', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('migrations', schema=None) as batch_op:
        batch_op.drop_column('transfer_token')
        batch_op.drop_column('max_bandwidth')
        batch_op.drop_column('progress_at')
        batch_op.drop_column('transfer_files')
        batch_op.drop_column('transfer_eta')
        batch_op.drop_column('transfer_rate')
        batch_op.alter_column('bytes_done', existing_type=sa.BigInteger(),
                              type_=sa.Integer(), existing_nullable=False)
        batch_op.alter_column('bytes_total', existing_type=sa.BigInteger(),
                              type_=sa.Integer(), existing_nullable=False)
