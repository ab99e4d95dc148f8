"""Sample import files shared by the functional and integration tests: every outcome
of a residents export and of a vaccination feed."""

RESIDENTS = """id,name,dob,gender,address,district,ward,household_id,nickname
001090123456,Nguyễn Văn An,1990-03-15,Nam,"Số 12 Ngõ 34 Kim Mã",Ba Đình,Phường Kim Mã,H1,An
001190654321,Trần Thị Bình,1990-07-01,Nữ,"Số 12 Ngõ 34 Kim Mã",Ba Đình,Phường Kim Mã,H1,
001085111222,Lê Văn Cường,1985-01-20,Nam,"Số 3 Hàng Bài",Hoàn Kiếm,Phường Tràng Tiền,H2,
001085111223,Phạm Văn Dũng,1985-01-20,Nam,"Số 3 Hàng Bài",Hoàn Kiếm,Phường Kim Mã,H2,
099085111224,Vũ Văn Em,1985-01-20,Nam,"Số 3 Hàng Bài",Hoàn Kiếm,Phường Tràng Tiền,H2,
"""

VACCINATIONS = """person_id,name,dob,dose,vaccine,date,site,batch_no
001090123456,nguyen van an,15/03/1990,1,AstraZeneca,2021-07-01,TYT Kim Mã,A1
001090123456,NGUYỄN VĂN AN,1990-03-15,2,AstraZeneca,2021-09-01,TYT Kim Mã,A2
001090123456,Nguyễn Văn An,1990-03-15,2,AstraZeneca,2021-09-01,TYT Kim Mã,A2
001190654321,Trần Thị Bích Ngọc,1990-07-01,1,Pfizer,2021-08-01,TYT Kim Mã,B1
001085999999,Đỗ Văn Giang,1985-02-02,1,Pfizer,2021-08-01,BV Bạch Mai,C1
00108599999X,Đỗ Văn Giang,1985-02-02,1,Pfizer,2021-08-01,BV Bạch Mai,C1
001085111222,Lê Văn Cường,1985-01-20,seven,Pfizer,2021-08-01,BV Bạch Mai,C1
"""
