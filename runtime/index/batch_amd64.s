//go:build amd64 && !purego

#include "textflag.h"

// Batched kernels: out[i] = kernel(q, row(ids[i])) where row(id) starts at
// base + id*stride bytes. While row i is computed, every cache line of row
// i+1 is prefetched, so the random accesses of a graph walk overlap.

#define REDUCE4 \
	VADDPS Y1, Y0, Y0 \
	VADDPS Y3, Y2, Y2 \
	VADDPS Y2, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS X1, X0, X0 \
	VMOVHLPS X0, X0, X1 \
	VADDPS X1, X0, X0 \
	VMOVSHDUP X0, X1 \
	VADDSS X1, X0, X0

// func dotBatchAVX2(q []float32, base unsafe.Pointer, ids []uint32, stride uintptr, out []float32)
TEXT ·dotBatchAVX2(SB), NOSPLIT, $0-88
	MOVQ q_base+0(FP), R8
	MOVQ q_len+8(FP), R9
	MOVQ base+24(FP), R10
	MOVQ ids_base+32(FP), R11
	MOVQ ids_len+40(FP), R12
	MOVQ stride+56(FP), R13
	MOVQ out_base+64(FP), R14
	XORQ BX, BX
	TESTQ R12, R12
	JEQ  dotBatchAVX2_done
	// Ask for the first cache line of every row at once, so the misses
	// overlap; the rest of each row is prefetched one row ahead below.
	XORQ DX, DX
dotBatchAVX2_pf0:
	MOVL (R11)(DX*4), AX
	IMULQ R13, AX
	PREFETCHT0 (R10)(AX*1)
	INCQ DX
	CMPQ DX, R12
	JLT  dotBatchAVX2_pf0

dotBatchAVX2_row:
	MOVL (R11)(BX*4), AX
	IMULQ R13, AX
	LEAQ (R10)(AX*1), DI
	LEAQ 1(BX), DX
	CMPQ DX, R12
	JGE  dotBatchAVX2_nopf
	MOVL (R11)(DX*4), AX
	IMULQ R13, AX
	ADDQ R10, AX
	MOVQ R13, CX
dotBatchAVX2_pf:
	PREFETCHT0 (AX)
	ADDQ $64, AX
	SUBQ $64, CX
	JGT  dotBatchAVX2_pf

dotBatchAVX2_nopf:
	MOVQ R8, SI
	MOVQ R9, CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	CMPQ CX, $32
	JLT  dotBatchAVX2_8

dotBatchAVX2_32:
	VMOVUPS     0(SI), Y4
	VMOVUPS     32(SI), Y5
	VMOVUPS     64(SI), Y6
	VMOVUPS     96(SI), Y7
	VFMADD231PS 0(DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE  dotBatchAVX2_32

dotBatchAVX2_8:
	CMPQ CX, $8
	JLT  dotBatchAVX2_reduce
	VMOVUPS     (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  dotBatchAVX2_8

dotBatchAVX2_reduce:
	REDUCE4
	TESTQ CX, CX
	JEQ   dotBatchAVX2_store

dotBatchAVX2_tail:
	VMOVSS      (SI), X1
	VFMADD231SS (DI), X1, X0
	ADDQ        $4, SI
	ADDQ        $4, DI
	DECQ CX
	JNE  dotBatchAVX2_tail

dotBatchAVX2_store:
	VMOVSS X0, (R14)(BX*4)
	INCQ BX
	CMPQ BX, R12
	JLT  dotBatchAVX2_row

dotBatchAVX2_done:
	VZEROUPPER
	RET

// func l2sqBatchAVX2(q []float32, base unsafe.Pointer, ids []uint32, stride uintptr, out []float32)
TEXT ·l2sqBatchAVX2(SB), NOSPLIT, $0-88
	MOVQ q_base+0(FP), R8
	MOVQ q_len+8(FP), R9
	MOVQ base+24(FP), R10
	MOVQ ids_base+32(FP), R11
	MOVQ ids_len+40(FP), R12
	MOVQ stride+56(FP), R13
	MOVQ out_base+64(FP), R14
	XORQ BX, BX
	TESTQ R12, R12
	JEQ  l2sqBatchAVX2_done
	// Ask for the first cache line of every row at once, so the misses
	// overlap; the rest of each row is prefetched one row ahead below.
	XORQ DX, DX
l2sqBatchAVX2_pf0:
	MOVL (R11)(DX*4), AX
	IMULQ R13, AX
	PREFETCHT0 (R10)(AX*1)
	INCQ DX
	CMPQ DX, R12
	JLT  l2sqBatchAVX2_pf0

l2sqBatchAVX2_row:
	MOVL (R11)(BX*4), AX
	IMULQ R13, AX
	LEAQ (R10)(AX*1), DI
	LEAQ 1(BX), DX
	CMPQ DX, R12
	JGE  l2sqBatchAVX2_nopf
	MOVL (R11)(DX*4), AX
	IMULQ R13, AX
	ADDQ R10, AX
	MOVQ R13, CX
l2sqBatchAVX2_pf:
	PREFETCHT0 (AX)
	ADDQ $64, AX
	SUBQ $64, CX
	JGT  l2sqBatchAVX2_pf

l2sqBatchAVX2_nopf:
	MOVQ R8, SI
	MOVQ R9, CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	CMPQ CX, $32
	JLT  l2sqBatchAVX2_8

l2sqBatchAVX2_32:
	VMOVUPS     0(SI), Y4
	VMOVUPS     32(SI), Y5
	VMOVUPS     64(SI), Y6
	VMOVUPS     96(SI), Y7
	VSUBPS      0(DI), Y4, Y4
	VSUBPS      32(DI), Y5, Y5
	VSUBPS      64(DI), Y6, Y6
	VSUBPS      96(DI), Y7, Y7
	VFMADD231PS Y4, Y4, Y0
	VFMADD231PS Y5, Y5, Y1
	VFMADD231PS Y6, Y6, Y2
	VFMADD231PS Y7, Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE  l2sqBatchAVX2_32

l2sqBatchAVX2_8:
	CMPQ CX, $8
	JLT  l2sqBatchAVX2_reduce
	VMOVUPS     (SI), Y4
	VSUBPS      (DI), Y4, Y4
	VFMADD231PS Y4, Y4, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  l2sqBatchAVX2_8

l2sqBatchAVX2_reduce:
	REDUCE4
	TESTQ CX, CX
	JEQ   l2sqBatchAVX2_store

l2sqBatchAVX2_tail:
	VMOVSS      (SI), X1
	VSUBSS      (DI), X1, X1
	VFMADD231SS X1, X1, X0
	ADDQ        $4, SI
	ADDQ        $4, DI
	DECQ CX
	JNE  l2sqBatchAVX2_tail

l2sqBatchAVX2_store:
	VMOVSS X0, (R14)(BX*4)
	INCQ BX
	CMPQ BX, R12
	JLT  l2sqBatchAVX2_row

l2sqBatchAVX2_done:
	VZEROUPPER
	RET

// func dotI8BatchAVX2(q []float32, base unsafe.Pointer, ids []uint32, stride uintptr, out []float32)
TEXT ·dotI8BatchAVX2(SB), NOSPLIT, $0-88
	MOVQ q_base+0(FP), R8
	MOVQ q_len+8(FP), R9
	MOVQ base+24(FP), R10
	MOVQ ids_base+32(FP), R11
	MOVQ ids_len+40(FP), R12
	MOVQ stride+56(FP), R13
	MOVQ out_base+64(FP), R14
	XORQ BX, BX
	TESTQ R12, R12
	JEQ  dotI8BatchAVX2_done
	// Ask for the first cache line of every row at once, so the misses
	// overlap; the rest of each row is prefetched one row ahead below.
	XORQ DX, DX
dotI8BatchAVX2_pf0:
	MOVL (R11)(DX*4), AX
	IMULQ R13, AX
	PREFETCHT0 (R10)(AX*1)
	INCQ DX
	CMPQ DX, R12
	JLT  dotI8BatchAVX2_pf0

dotI8BatchAVX2_row:
	MOVL (R11)(BX*4), AX
	IMULQ R13, AX
	LEAQ (R10)(AX*1), DI
	LEAQ 1(BX), DX
	CMPQ DX, R12
	JGE  dotI8BatchAVX2_nopf
	MOVL (R11)(DX*4), AX
	IMULQ R13, AX
	ADDQ R10, AX
	MOVQ R13, CX
dotI8BatchAVX2_pf:
	PREFETCHT0 (AX)
	ADDQ $64, AX
	SUBQ $64, CX
	JGT  dotI8BatchAVX2_pf

dotI8BatchAVX2_nopf:
	MOVQ R8, SI
	MOVQ R9, CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	CMPQ CX, $32
	JLT  dotI8BatchAVX2_8

dotI8BatchAVX2_32:
	VPMOVSXBD   0(DI), Y4
	VPMOVSXBD   8(DI), Y5
	VPMOVSXBD   16(DI), Y6
	VPMOVSXBD   24(DI), Y7
	VCVTDQ2PS   Y4, Y4
	VCVTDQ2PS   Y5, Y5
	VCVTDQ2PS   Y6, Y6
	VCVTDQ2PS   Y7, Y7
	VFMADD231PS 0(SI), Y4, Y0
	VFMADD231PS 32(SI), Y5, Y1
	VFMADD231PS 64(SI), Y6, Y2
	VFMADD231PS 96(SI), Y7, Y3
	ADDQ $128, SI
	ADDQ $32, DI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE  dotI8BatchAVX2_32

dotI8BatchAVX2_8:
	CMPQ CX, $8
	JLT  dotI8BatchAVX2_reduce
	VPMOVSXBD   (DI), Y4
	VCVTDQ2PS   Y4, Y4
	VFMADD231PS (SI), Y4, Y0
	ADDQ $32, SI
	ADDQ $8, DI
	SUBQ $8, CX
	JMP  dotI8BatchAVX2_8

dotI8BatchAVX2_reduce:
	REDUCE4
	TESTQ CX, CX
	JEQ   dotI8BatchAVX2_store

dotI8BatchAVX2_tail:
	MOVBLSX     (DI), AX
	VCVTSI2SSL  AX, X1, X1
	VFMADD231SS (SI), X1, X0
	ADDQ        $4, SI
	INCQ        DI
	DECQ CX
	JNE  dotI8BatchAVX2_tail

dotI8BatchAVX2_store:
	VMOVSS X0, (R14)(BX*4)
	INCQ BX
	CMPQ BX, R12
	JLT  dotI8BatchAVX2_row

dotI8BatchAVX2_done:
	VZEROUPPER
	RET

// func prefetch(p unsafe.Pointer)
TEXT ·prefetch(SB), NOSPLIT, $0-8
	MOVQ       p+0(FP), AX
	PREFETCHT0 (AX)
	RET
