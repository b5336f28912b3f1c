"""adapter and basis artifact bytes in the database, with their sha256

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 00:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('adapter_versions', 'bases'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('artifact', sa.LargeBinary(), nullable=True))
            batch_op.add_column(sa.Column('sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in ('bases', 'adapter_versions'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('sha256')
            batch_op.drop_column('artifact')
