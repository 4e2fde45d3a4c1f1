/*
 * pipeline — from RTP packets to segments: RTP validation, the reorder
 * window, keyframe detection (H.264, H.265), keyframe-aligned segmentation
 * with gap accounting, and the live ring for viewers. Prefix pipe_.
 *
 * The module's API lands here with the SRTP ingest issue; until then the
 * library carries no code and links the storage module.
 */
#ifndef CUSTOS_PIPELINE_H
#define CUSTOS_PIPELINE_H

#include "storage/store.h"

#endif /* CUSTOS_PIPELINE_H */
